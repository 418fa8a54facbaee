"""The deployed model: the runtimes that run exported files (runtimes), opened in one place each."""
