"""Modbus RTU / TCP driver (``kind: modbus``): register maps as profiles, read coalescing.

``CONFIG_MODEL`` is the device config model; :class:`ModbusDriver` is the driver.
"""

from edge_agent.drivers.modbus.config import ModbusDevice, ModbusSettings
from edge_agent.drivers.modbus.driver import ModbusDriver

CONFIG_MODEL = ModbusDevice

__all__ = ["CONFIG_MODEL", "ModbusDevice", "ModbusDriver", "ModbusSettings"]
