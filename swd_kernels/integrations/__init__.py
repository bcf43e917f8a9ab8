"""Ways into training frameworks that pick optimizers by name (timm). Each submodule imports
its framework only when used; the optimizers themselves need no integration."""
