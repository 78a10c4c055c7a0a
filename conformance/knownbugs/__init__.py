"""knownbugs stage."""
