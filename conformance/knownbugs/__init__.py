"""Known QEMU bugs (bugs.toml) and the matcher that explains failures with them."""
