"""PyTorch writer: laid-out graph -> model.py (nn.Module) + model.safetensors."""
