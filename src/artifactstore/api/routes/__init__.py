"""One router module per resource: uploads, blobs, packages, events, system."""
