"""Peak dense bf16 tensor-core FLOP/s of NVIDIA GPUs (fp16 for the V100, which has no bf16),
without sparsity, from NVIDIA's datasheets: the denominator of MFU (model FLOPs utilisation).
"""

# Matched in order against torch.cuda.get_device_name(), so specific names come first.
PEAK_FLOPS = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("GH200", 989e12), ("H200", 989e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12),
]


def peak_flops(device_name):
    """Peak FLOP/s of a GPU from its name, or None when we don't know it (then no MFU is shown)."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None
