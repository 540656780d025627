"""The server's MQTT side: the embedded broker, the link to any broker, and the message handlers.

- :mod:`server.mqtt.credentials`: device broker passwords (random, stored hashed).
- :mod:`server.mqtt.acl`: who may publish or subscribe what (the embedded broker's topic ACL,
  the same rules as the Mosquitto ACL file).
- :mod:`server.mqtt.embedded`: amqtt in-process for the embedded default (MQTT 3.1.1 only).
- :mod:`server.mqtt.link`: the server's own connection: subscribe, reconnect, publish queue.
- :mod:`server.mqtt.handlers`: what each device topic means to the services, and the counts of refusals.
"""
