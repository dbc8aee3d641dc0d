"""Events (what happened, and the alert text for each kind), the checks that raise them, and their delivery to alert sinks."""
