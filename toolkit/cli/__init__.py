"""The `toolkit` command line: commands parse arguments and present results; logic lives elsewhere."""
