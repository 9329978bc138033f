"""Storage backends behind one protocol (``spi``), chosen by configuration (``factory``)."""
