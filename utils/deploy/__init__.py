"""The deployed model: the export writers (writers: TorchScript, ONNX, OpenVINO, one metadata dict), the runtimes
opened in one place each (runtimes: OpenVINO at f32 unless asked), the timing runners of ONNX Runtime and OpenVINO
(runners) and latency measured in interleaved rounds (latency). Used by export.py, val.py / detect.py (through
models.backends), compare.py and benchmarks/; nothing here imports a script."""
