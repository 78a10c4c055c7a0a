"""argv stage."""
