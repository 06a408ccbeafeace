"""A benchmark row as scripts/bench_quality.py writes it, for the bench's tests."""


def row(key, family, bits, mse, nn10, seconds=10.0):
    return {"key": key, "family": family, "code_bits": bits, "mse": mse, "nn10": nn10,
            "seconds": seconds, "method": f"{key} ({bits} bits)", "cosine": 0.9,
            "ws353": 0.5, "ws353_delta": 0.0, "sl999": 0.3, "sl999_delta": 0.0}
