"""Training: options, the set-up of a run (setup), optimisers and schedules (optim, plugin_optim), the loss,
seeds, image weights, the run's files (run_files), AutoAnchor, AutoBatch, callbacks, loggers, plots and
hyperparameter evolution."""
