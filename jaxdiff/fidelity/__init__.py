"""Fidelity evaluation: the MNIST feature network, the metrics and sample evaluation."""
