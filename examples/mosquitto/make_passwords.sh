#!/bin/sh
# Create examples/mosquitto/passwd for the three users of the ACL. Passwords come from the
# environment (defaults are for a local demo only; never use them on a shared broker).
set -eu
dir=$(dirname "$0")
out="$dir/passwd"
rm -f "$out"
touch "$out"
chmod 600 "$out"
mosquitto_passwd -b "$out" unison-server "${UNISON_MQTT_PASSWORD:-server-secret}"
mosquitto_passwd -b "$out" game "${GAME_MQTT_PASSWORD:-game-secret}"
mosquitto_passwd -b "$out" viewer "${VIEWER_MQTT_PASSWORD:-viewer-secret}"
echo "wrote $out"
