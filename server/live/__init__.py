"""Live view relay: a device's WebRTC stream received once and relayed to any number of viewers."""
