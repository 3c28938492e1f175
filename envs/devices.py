"""Thermal and battery parameters per device kind (the ``device_kind`` of a trace's metadata).

First-order lumped thermal model: ``dT/dt = (T_amb + R_th · P − T) / τ``, where P is the whole
device's electrical power (every watt ends up as heat). Above ``t_max_c`` the governor scales
throughput by ``max(throttle_min, 1 − throttle_per_c · (T − t_max_c))``, as a DVFS governor
lowers clocks when the skin/junction sensor crosses its trip point.

The figures are modelled, order-of-magnitude values, documented here so they can be checked:

* phone: passively cooled handset, skin-temperature limit ≈ 43–45 °C (vendor skin-temperature
  guidelines); a phone sustaining 3–4 W settles 15–20 °C above ambient → R_th ≈ 5 °C/W;
  handset thermal time constants are minutes → τ = 240 s; SoC idle ≈ 0.2 W.
* laptop: fan-cooled chassis; ≈ 2–3 °C/W from package power to chassis, throttle point of the
  sensor the governor watches set to 70 °C; τ = 120 s (fan reacts quickly); idle ≈ 2 W.
* solar-node: sealed outdoor enclosure (e.g. a Raspberry-Pi-class board in an IP65 box):
  ≈ 10 °C/W, slow (τ = 600 s), component limit 60 °C; idle ≈ 0.5 W.

Idle power here is the platform's power while the model waits (the profile's ``idle_power_w``
describes the machine the profile was measured on, not the simulated device).
* default: used for unknown kinds; phone-like.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceParams:
    r_th_c_per_w: float  # steady-state temperature rise per watt dissipated, °C/W
    tau_s: float  # thermal time constant, s
    t_max_c: float  # throttling trip point, °C
    throttle_per_c: float = 0.1  # throughput lost per °C above t_max_c (fraction)
    throttle_min: float = 0.3  # throughput never scaled below this fraction
    charge_efficiency: float = 0.9  # fraction of surplus supply power stored in the battery
    idle_power_w: float = 0.2  # platform idle power while the model waits, W


DEVICES: dict[str, DeviceParams] = {
    "phone": DeviceParams(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0, idle_power_w=0.2),
    "laptop": DeviceParams(r_th_c_per_w=2.5, tau_s=120.0, t_max_c=70.0, idle_power_w=2.0),
    "solar-node": DeviceParams(r_th_c_per_w=10.0, tau_s=600.0, t_max_c=60.0, idle_power_w=0.5),
    "default": DeviceParams(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0, idle_power_w=0.2),
}


def device_params(kind: str) -> DeviceParams:
    return DEVICES.get(kind, DEVICES["default"])
