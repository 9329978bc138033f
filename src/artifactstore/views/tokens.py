"""Token view: the API tokens that authenticate, by name, scope and hash."""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.db.batch import Changes, StatementBatch, insert_rows, update_rows
from artifactstore.db.tables import api_tokens
from artifactstore.events.payloads import TokenCreated, TokenRevoked

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.events.log import Event

__all__ = ["TokenFold"]


class TokenFold:
    """A batch's changes to ``api_tokens``: creations inserted, revocations set.

    A revocation updates a token that exists by then and does nothing
    otherwise; a second creation of a name is a unique violation, as before.
    """

    def __init__(self) -> None:
        self.tokens: Changes[str] = Changes()
        self.clashes: list[dict[str, object]] = []

    def add(self, event: Event, data: TokenCreated | TokenRevoked) -> None:
        """Fold one token event into the batch."""
        if isinstance(data, TokenRevoked):
            self.tokens.update(data.name, {"revoked": True, "revoked_at": event.occurred_at})
            return
        row = {
            "name": data.name,
            "token_hash": data.token_hash,
            "scope": data.scope,
            "created_at": event.occurred_at,
            "revoked": False,
            "revoked_at": None,
        }
        if data.name in self.tokens.rows:  # inserted too, so the flush fails as before
            self.clashes.append(row)
        else:
            self.tokens.rows[data.name] = row

    def collect(self, batch: StatementBatch, targets: Mapping[str, str]) -> None:
        """Queue the batch's statements: revocations of existing tokens first, then new ones."""
        update_rows(
            batch,
            api_tokens,
            self.tokens,
            targets,
            match=("name",),
            assign={"revoked": "v.revoked", "revoked_at": "v.revoked_at"},
        )
        rows = [*self.tokens.rows.values(), *self.clashes]
        insert_rows(batch, api_tokens, rows, targets)
