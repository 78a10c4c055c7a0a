"""domain stage."""
