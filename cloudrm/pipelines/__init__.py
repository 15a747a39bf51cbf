"""Pipelines: each method's inference written out as a short function over its models (tensors in, tensors out).

They know nothing of weights folders, files or the hub (``methods`` loads the parts and calls them), and every
denoising loop goes through :func:`cloudrm.sampling.sample`. Training uses the same functions for validation.
"""
