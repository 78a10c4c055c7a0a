"""caps stage."""
