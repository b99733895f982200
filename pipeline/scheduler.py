"""Flow-matching schedule of the few-step causal generators.

sigma(s) = shift * s / (1 + (shift - 1) * s) on s = 1 - i / T (i = 0..T-1); timestep = T * sigma.
The N-step list (e.g. 1000/750/500/250) is warped onto this shifted table. Each step predicts
x0 = x_t - sigma_t * flow and re-noises x0 to the next step's sigma with fresh Gaussian noise.
The block loop passes its timesteps as Python floats: their sigma is looked up on the host, so no
timestep travels to the device and back per call. Tensor timesteps (one per sample and frame) are
looked up on the table's device.
"""
from __future__ import annotations

import torch


class FlowMatchSchedule:
    def __init__(self, shift: float = 5.0, num_train_timesteps: int = 1000):
        self.num_train_timesteps = num_train_timesteps
        s = torch.linspace(1.0, 0.0, num_train_timesteps + 1)[:-1]
        self.sigmas = shift * s / (1 + (shift - 1) * s)  # [T] float32
        self.timesteps = self.sigmas * num_train_timesteps
        self._host_table = list(zip(self.timesteps.tolist(), self.sigmas.tolist()))  # (timestep, sigma) as floats
        self._host_sigmas: dict[float, float] = {}

    def step_timesteps(self, step_list: list[int], warp: bool) -> torch.Tensor:
        """The N denoising timesteps; `warp` maps step k to the table entry T - k."""
        steps = torch.tensor(step_list, dtype=torch.long)
        if not warp:
            return steps.to(torch.float32)
        table = torch.cat([self.timesteps, torch.zeros(1)])
        return table[self.num_train_timesteps - steps]

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Table sigma of the nearest table timestep, elementwise (same shape as `timestep`)."""
        t = timestep.detach().to(self.timesteps.device, torch.float32)
        idx = (self.timesteps.view(1, -1) - t.reshape(-1, 1)).abs().argmin(dim=1)
        return self.sigmas[idx].view(t.shape)

    def sigma_of(self, timestep: float) -> float:
        """`sigma` of one Python-float timestep, on the host (the first of equally near table entries, as argmin)."""
        if timestep not in self._host_sigmas:
            self._host_sigmas[timestep] = min(self._host_table, key=lambda entry: abs(entry[0] - timestep))[1]
        return self._host_sigmas[timestep]

    def _sigma_like(self, timestep: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
        """sigma of a float (a float) or of a [B, F] tensor (as [B, F, 1, 1, 1] on x's device)."""
        if isinstance(timestep, float):
            return self.sigma_of(timestep)
        return self.sigma(timestep).to(x.device)[..., None, None, None]

    def flow_to_x0(self, flow: torch.Tensor, x_t: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
        """flow, x_t: [B, F, C, H, W]; timestep: [B, F] or one float -> x0 (computed in float64, returned in x_t's dtype)."""
        sigma = self._sigma_like(timestep, flow)
        if isinstance(sigma, torch.Tensor):
            sigma = sigma.to(torch.float64)
        return (x_t.double() - sigma * flow.double()).to(x_t.dtype)

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
        """x0, noise: [B, F, C, H, W]; timestep: [B, F] or one float -> x_t = (1 - sigma) x0 + sigma noise."""
        sigma = self._sigma_like(timestep, x0)
        return ((1 - sigma) * x0 + sigma * noise).to(noise.dtype)
