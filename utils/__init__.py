"""Utilities by concern: `data/` (data YAML, images, labels, dataset, augmentation, sources), `training/` (options,
set-up, optimisers, loss, seeds, run files, callbacks, loggers, evolution), `compare/` (runs, statistics, sizes,
latency, memory, deployed latency, plug-in share, routing figures, report, charts); and, shared by all, boxes,
nms, metrics, coco_eval, plots, checkpoint, transfer, flops, hyp, checks, cli, distributed, files, log, paths,
errors, hub and torch_utils."""
