"""detect.py's parts: its options, what it draws and writes per image, the viewer, video bars and feature maps."""
