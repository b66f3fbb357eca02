"""Datasets: synthetic Shapes and Blocks, labelled-fraction splits, batching."""
