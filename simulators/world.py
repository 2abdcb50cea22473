"""The physical side of the simulated campus: classrooms and electrical loads.

Every value is a pure function of the seed and the simulated time: slow states (CO2, heat from
pupils, energy) are integrated on a fixed 60-second grid anchored to the epoch, and the
random wander comes from hashed lattice noise. Reading more or less often does not change
what a device reports at a given simulated time, and nothing runs between reads.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import ClassVar

from .timetable import Phase, SimClock, Timetable

STEP_S = 60.0
_WARMUP_S = 6 * 3600.0
_MASK64 = (1 << 64) - 1


def stable_key(*parts: object) -> int:
    """A 64-bit key from strings/numbers, the same in every process (unlike ``hash``)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64 finaliser."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def lattice(key: int, index: int) -> float:
    """Uniform pseudo-random number in [-1, 1] for ``(key, index)``."""
    return _mix(key ^ _mix(index & _MASK64)) / _MASK64 * 2.0 - 1.0


def smooth(key: int, t: float, period: float) -> float:
    """Smooth noise in [-1, 1] that changes over about ``period`` seconds."""
    x = t / period
    i = math.floor(x)
    f = x - i
    f = f * f * (3.0 - 2.0 * f)
    a = lattice(key, i)
    return a + (lattice(key, i + 1) - a) * f


def jitter(key: int, t: float, period: float = 10.0) -> float:
    """Step noise in [-1, 1], a new value every ``period`` seconds (sensor noise)."""
    return lattice(key, math.floor(t / period))


class Weather:
    """Campus-wide outdoor conditions: daylight, clouds, particulates, temperature."""

    def __init__(self, seed: int, clock: SimClock) -> None:
        self.clock = clock
        self._cloud = stable_key(seed, "weather", "cloud")
        self._pm = stable_key(seed, "weather", "pm")
        self._temp = stable_key(seed, "weather", "temp")
        rng = random.Random(stable_key(seed, "weather"))
        self.pm_base = rng.uniform(15.0, 45.0)

    def day_of_year(self, t: float) -> float:
        """Fractional day of the year (0..365)."""
        return (t / 86_400.0) % 365.25

    def season(self, t: float) -> float:
        """+1 in mid-summer, -1 in mid-winter (northern hemisphere)."""
        return math.cos(2 * math.pi * (self.day_of_year(t) - 196) / 365.25)

    def daylight_lx(self, t: float) -> float:
        """Outdoor horizontal illuminance."""
        _, _, sod = self.clock.local_day(t)
        hour = sod / 3600.0
        half_day = 6.25 + 1.25 * self.season(t)
        sunrise, sunset = 12.5 - half_day, 12.5 + half_day
        if not sunrise < hour < sunset:
            return 0.0
        elevation = math.sin(math.pi * (hour - sunrise) / (sunset - sunrise))
        clouds = 0.65 + 0.35 * smooth(self._cloud, t, 3 * 3600.0)  # 0.3 .. 1.0
        return 60_000.0 * (0.75 + 0.25 * self.season(t)) * float(elevation**1.3) * clouds

    def outdoor_pm25(self, t: float) -> float:
        """Outdoor PM2.5 in µg/m³."""
        return max(3.0, self.pm_base * (1.0 + 0.6 * smooth(self._pm, t, 8 * 3600.0)))

    def indoor_base_c(self, t: float) -> float:
        """Unoccupied indoor temperature (heated in winter, warm in summer)."""
        _, _, sod = self.clock.local_day(t)
        daily = math.sin(2 * math.pi * (sod / 3600.0 - 9.0) / 24.0)  # peaks at 15:00
        return 21.0 + 3.5 * self.season(t) + 1.8 * daily + 0.8 * smooth(self._temp, t, 6 * 3600)


def _occupancy(
    timetable: Timetable, clock: SimClock, t: float, key: int, class_size: float
) -> tuple[Phase, float]:
    day, weekday, sod = clock.local_day(t)
    info = timetable.phase_at(weekday, sod)
    phase = info.phase
    if phase is Phase.LESSON:
        # About one lesson in ten happens elsewhere (gym, lab): the room stays nearly empty.
        away = lattice(key, day * 16 + (info.lesson or 0)) < -0.8
        return phase, 0.05 if away else class_size
    if phase is Phase.BREAK:
        return phase, 0.35 * class_size
    if phase is Phase.LUNCH:
        # Many schools keep a nap in the classroom from 12:30.
        return phase, (0.7 if sod >= 12.5 * 3600 else 0.2) * class_size
    if phase is Phase.ARRIVAL:
        ramp = (sod - (timetable.first_lesson_s - 1800)) / 1800.0
        return phase, max(0.0, min(1.0, ramp)) * 0.8 * class_size
    if phase is Phase.AFTER_SCHOOL:
        ramp = 1.0 - (sod - timetable.last_lesson_end_s) / 1800.0
        return phase, max(0.0, ramp) * 0.3 * class_size
    return phase, 0.0


@dataclass
class _RoomState:
    t: float
    co2: float
    heat: float  # °C above the unoccupied temperature
    load: float  # 0..1, slow "how used is the air" for TVOC


class Room:
    """One classroom: air quality, noise and light, driven by the timetable."""

    OUTDOOR_CO2 = 420.0

    def __init__(
        self, name: str, seed: int, clock: SimClock, timetable: Timetable, weather: Weather
    ) -> None:
        self.name = name
        self.clock = clock
        self.timetable = timetable
        self.weather = weather
        rng = random.Random(stable_key(seed, "room", name))
        self.class_size = rng.uniform(0.7, 1.0)
        tau_lesson_s = rng.uniform(25.0, 45.0) * 60.0
        self.k_lesson = 1.0 / tau_lesson_s
        self.k_break = 1.0 / (rng.uniform(2.5, 4.0) * 60.0)  # doors and windows open
        self.k_closed = 1.0 / (rng.uniform(50.0, 80.0) * 60.0)  # infiltration only
        # Pick the CO2 source so that a 40-minute lesson of this room's class that starts at
        # ~480 ppm ends at the room's peak (1300-2000 ppm): a spread of ventilation quality.
        peak = rng.uniform(1300.0, 2000.0)
        reach = 1.0 - math.exp(-2400.0 / tau_lesson_s)
        equilibrium = 480.0 + (peak - 480.0) / reach
        # ppm/s per unit of occupancy (1.0 = a full class of about 45 pupils)
        self.co2_source = (equilibrium - self.OUTDOOR_CO2) * self.k_lesson / self.class_size
        self.heat_gain = rng.uniform(1.5, 3.0)
        self.humidity_base = rng.uniform(38.0, 52.0)
        self.window = rng.uniform(0.006, 0.018)  # desk daylight factor
        self.lamp_lx = rng.uniform(380.0, 520.0)
        self.voice_db = rng.uniform(55.0, 62.0)
        self.hcho_base = rng.uniform(0.015, 0.05)
        self._key = stable_key(seed, "room-noise", name)
        self._keys = {m: stable_key(seed, name, m) for m in ("t", "h", "pm", "tv", "hc", "n", "l")}
        self._initial = self._warm_up(clock.start_s)
        self._state = self._initial

    # --- slow state -----------------------------------------------------------------------
    def _ventilation(self, phase: Phase) -> float:
        if phase is Phase.LESSON:
            return self.k_lesson
        if phase is Phase.CLOSED:
            return self.k_closed
        if phase is Phase.LUNCH:
            return 0.5 * (self.k_lesson + self.k_break)
        return self.k_break

    def _advance(self, state: _RoomState, dt: float) -> _RoomState:
        phase, occ = _occupancy(self.timetable, self.clock, state.t, self._key, self.class_size)
        k = self._ventilation(phase)
        co2_eq = self.OUTDOOR_CO2 + self.co2_source * occ / k
        co2 = co2_eq + (state.co2 - co2_eq) * math.exp(-k * dt)
        heat_eq = self.heat_gain * occ
        heat = heat_eq + (state.heat - heat_eq) * math.exp(-dt / 2700.0)
        load = occ + (state.load - occ) * math.exp(-dt / 5400.0)
        return _RoomState(state.t + dt, co2, heat, load)

    def _warm_up(self, start_s: float) -> _RoomState:
        # Start from empty-room air a few hours earlier, so that the first read is plausible.
        t0 = math.floor((start_s - _WARMUP_S) / STEP_S) * STEP_S
        return _RoomState(t0, self.OUTDOOR_CO2 + 20.0, 0.0, 0.0)

    def _commit(self, state: _RoomState, t: float) -> _RoomState:
        while state.t + STEP_S <= t:
            state = self._advance(state, STEP_S)
        return state

    def state_at(self, t: float) -> tuple[_RoomState, Phase, float]:
        """Slow state at ``t`` (commits whole grid steps, never goes back)."""
        if t < self._state.t:  # asked about the past (tests do): integrate again
            self._state = self._initial if t >= self._initial.t else self._warm_up(t)
        self._state = self._commit(self._state, t)
        state = self._advance(self._state, t - self._state.t)
        phase, occ = _occupancy(self.timetable, self.clock, t, self._key, self.class_size)
        return state, phase, occ

    # --- values -----------------------------------------------------------------------------
    def values(self, t: float) -> dict[str, float]:
        """Engineering values at POSIX time ``t`` (canonical units, unclamped)."""
        state, phase, occ = self.state_at(t)
        k = self._keys
        temperature = (
            self.weather.indoor_base_c(t)
            + state.heat
            + 0.3 * smooth(k["t"], t, 1800)
            + 0.05 * jitter(k["t"], t)
        )
        humidity = (
            self.humidity_base
            + 10.0 * self.weather.season(t)
            + 5.0 * smooth(k["h"], t, 4 * 3600)
            + 4.0 * state.load
            - 0.8 * state.heat
            + 0.3 * jitter(k["h"], t)
        )
        pm25 = (
            0.55 * self.weather.outdoor_pm25(t)
            + 10.0 * occ
            + 3.0 * smooth(k["pm"], t, 1200)
            + 1.0 * jitter(k["pm"], t)
        )
        pm10 = pm25 * 1.45 + 18.0 * occ + 2.0 * smooth(k["pm"] ^ 1, t, 900)
        tvoc = 0.08 + 0.35 * state.load + 0.03 * smooth(k["tv"], t, 1800)
        hcho = (
            self.hcho_base
            + 0.002 * (temperature - 20.0)
            + 0.006 * smooth(k["hc"], t, 3600)
            + 0.002 * jitter(k["hc"], t)
        )
        noise = {
            Phase.CLOSED: 33.0,
            Phase.ARRIVAL: 48.0 + 14.0 * occ,
            Phase.LESSON: self.voice_db if occ > 0.2 else 40.0,
            Phase.BREAK: 72.0,
            Phase.LUNCH: 52.0,
            Phase.AFTER_SCHOOL: 45.0,
        }[phase]
        noise += 3.0 * smooth(k["n"], t, 120) + 1.5 * jitter(k["n"], t, 2.0)
        daylight = self.weather.daylight_lx(t) * self.window
        lights_on = (phase is Phase.LESSON and occ > 0.2) or (
            phase in (Phase.ARRIVAL, Phase.BREAK, Phase.AFTER_SCHOOL) and daylight < 300.0
        )
        illuminance = daylight * (1.0 + 0.05 * jitter(k["l"], t))
        if lights_on:
            illuminance += self.lamp_lx
        return {
            "temperature": temperature,
            "humidity": min(max(humidity, 15.0), 90.0),
            "co2": state.co2 + 8.0 * jitter(k["t"] ^ 7, t),
            "pm25": max(pm25, 1.0),
            "pm10": max(pm10, 2.0),
            "tvoc": max(tvoc, 0.01),
            "hcho": max(hcho, 0.003),
            "noise": max(noise, 30.0),
            "illuminance": max(illuminance, 0.0),
        }


class Meter:
    """A three-phase energy meter on a building's distribution board."""

    def __init__(
        self,
        name: str,
        seed: int,
        clock: SimClock,
        timetable: Timetable,
        weather: Weather,
        *,
        max_day_kw: float = 20.0,
    ) -> None:
        self.name = name
        self.clock = clock
        self.timetable = timetable
        self.weather = weather
        rng = random.Random(stable_key(seed, "meter", name))
        self.standby_kw = rng.uniform(0.8, 2.5)
        self.day_kw = rng.uniform(0.4, 1.0) * max_day_kw
        skew = [rng.uniform(-0.12, 0.12) for _ in range(3)]
        mean = sum(skew) / 3
        self.imbalance = tuple(x - mean for x in skew)  # the phases still add up to the total
        self.pf_base = rng.uniform(0.88, 0.95)
        self._keys = [stable_key(seed, name, "phase", i) for i in range(3)]
        self._load_key = stable_key(seed, name, "load")
        self._f_key = stable_key(seed, "grid-frequency")  # one grid for the whole campus
        self._t0 = self._t = math.floor(clock.start_s / STEP_S) * STEP_S
        self._e0 = self._energy_kwh = rng.uniform(1_000.0, 60_000.0)

    _PHASE_LOAD: ClassVar[dict[Phase, float]] = {
        Phase.CLOSED: 0.0,
        Phase.ARRIVAL: 0.45,
        Phase.LESSON: 1.0,
        Phase.BREAK: 0.9,
        Phase.LUNCH: 0.55,
        Phase.AFTER_SCHOOL: 0.3,
    }

    def power_w(self, t: float) -> float:
        """Total active power in W."""
        _, weekday, sod = self.clock.local_day(t)
        phase = self.timetable.phase_at(weekday, sod).phase
        # Heating/cooling adds load away from spring and autumn.
        hvac = 1.0 + 0.25 * abs(self.weather.season(t))
        kw = self.standby_kw * (1.0 + 0.1 * smooth(self._load_key ^ 1, t, 1800))
        kw += (
            self.day_kw
            * self._PHASE_LOAD[phase]
            * hvac
            * (1.0 + 0.06 * smooth(self._load_key, t, 300))
        )
        return kw * 1000.0

    def energy_kwh(self, t: float) -> float:
        """Energy register: integrated on the grid, so it never runs backwards."""
        if t < self._t:  # asked about the past (tests do): integrate again from the start
            self._t, self._energy_kwh = self._t0, self._e0
        while self._t + STEP_S <= t:
            self._energy_kwh += self.power_w(self._t) * STEP_S / 3.6e6
            self._t += STEP_S
        return self._energy_kwh + self.power_w(self._t) * max(0.0, t - self._t) / 3.6e6

    def values(self, t: float) -> dict[str, float]:
        """Engineering values at POSIX time ``t`` (canonical units)."""
        power = self.power_w(t)
        load_share = min(1.0, power / 1000.0 / max(self.standby_kw + self.day_kw, 1e-3))
        pf = self.pf_base - 0.06 * (1.0 - load_share) + 0.01 * jitter(self._load_key, t)
        pf = min(max(pf, 0.75), 0.99)
        out: dict[str, float] = {"power_total": power, "power_factor": pf}
        for i in range(3):
            key = self._keys[i]
            share = power / 3.0 * (1.0 + self.imbalance[i])
            volts = 230.0 + 3.0 * smooth(key, t, 1800) + 0.4 * jitter(key, t, 5.0)
            amps = share / (volts * pf)
            volts -= 0.03 * amps  # drop along the feeder
            out[f"voltage_l{i + 1}"] = volts
            out[f"current_l{i + 1}"] = share / (volts * pf)
        out["frequency"] = (
            50.0 + 0.04 * smooth(self._f_key, t, 600) + 0.01 * jitter(self._f_key, t, 3.0)
        )
        energy = self.energy_kwh(t)
        out["energy_total"] = energy
        out["energy_import"] = energy
        return out
