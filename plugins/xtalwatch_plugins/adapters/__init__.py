"""Built-in instrument adapters: each turns an imager's path into plate, well, drop, inspection."""
