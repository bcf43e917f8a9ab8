"""AdamS in place of torch.optim.AdamW in a mixed-precision training loop (CPU or GPU).

    python examples/train_with_gradscaler.py
"""
import torch

import swd_kernels

device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 10))
model.to(device)
optimizer = swd_kernels.AdamS(model.parameters(), lr=1e-3, weight_decay=5e-4)
scaler = torch.amp.GradScaler(device)
x, y = torch.randn(512, 64, device=device), torch.randint(0, 10, (512,), device=device)

for step in range(200):
    with torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # grads are unscaled inside the fused step; inf/NaN skips it
    scaler.update()
    if step % 50 == 0 or step == 199:
        print(f"step {step:3d}  loss {loss.item():.4f}")
print("backends:", optimizer.backends)  # which backend ran each (device, dtype)
