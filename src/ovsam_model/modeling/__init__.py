"""OV-SAM modules, one family per file; ``ovsam.OVSAM`` assembles them."""
