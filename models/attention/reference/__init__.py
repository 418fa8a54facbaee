"""The plain reference of each plug-in, beside its fast path in models/attention/: the same maths written the
obvious way (the original BiFormer gather of every routed region, LITv2's explicit softmax, Slide's unfold). The
tests hold each fast module to its reference (outputs and gradients, odd and non-square sizes) and
benchmarks/bench_attention.py times both. Not registered for model YAMLs."""
