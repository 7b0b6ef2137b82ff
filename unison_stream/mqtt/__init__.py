"""MQTT bridge: drive broadcast channels and follow their events over a broker (docs/mqtt.md)."""

from unison_stream.mqtt.bridge import MqttBridge, attach_mqtt
from unison_stream.mqtt.config import MqttConfig, load_mqtt_config

__all__ = ["MqttBridge", "MqttConfig", "attach_mqtt", "load_mqtt_config"]
