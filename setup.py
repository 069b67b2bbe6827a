"""Packaging shim: ships the top-level kernels/ folder as ``gadx.kernels``.

A top-level module named ``kernels`` would collide with the PyPI package of
that name (which transformers imports when present), so the folder is mapped
into the gadx namespace. Everything else lives in pyproject.toml.
"""
from setuptools import find_packages, setup

kernel_pkgs = ["gadx." + p for p in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=find_packages(include=["gadx", "gadx.*"]) + kernel_pkgs,
    package_dir={"gadx": "gadx", "gadx.kernels": "kernels"},
)
