"""Files retracer puts into its sandbox images (the gdb driver script and friends)."""
