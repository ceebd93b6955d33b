"""How Relaydesk's processes reach NATS: the embedded server of ``relaydesk up``
(``embedded``), its users and their permissions (``auth``, ``permissions``), a connection
watched for a lost login (``connection``), and which errors mean NATS did not answer (``errors``)."""
