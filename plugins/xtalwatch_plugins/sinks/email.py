"""One mail per alert over SMTP; credentials come from environment variables, never the config file."""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage

from xtalwatch.alerts.alert import Alert
from xtalwatch.config import EmailSinkConfig

__all__ = ["EmailSink"]


class EmailSink:
    name = "email"
    kind = "sink"

    def __init__(self, config: EmailSinkConfig):
        self.config = config
        for var in (config.username_env, config.password_env):
            if var is not None and var not in os.environ:
                raise ValueError(f"environment variable {var} is not set")
        if (config.username_env is None) != (config.password_env is None):
            raise ValueError("username_env and password_env go together")

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[xtalwatch] {alert.title}"
        msg["From"] = self.config.from_address
        msg["To"] = ", ".join(self.config.to)
        lines = [alert.text, ""] + [f"{k}: {v}" for k, v in alert.fields.items()]
        lines += ["", f"kind: {alert.kind}", f"severity: {alert.severity}", f"created: {alert.to_json()['created']}"]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, alert: Alert) -> None:
        c = self.config
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds) as smtp:
            if c.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if c.username_env and c.password_env:
                smtp.login(os.environ[c.username_env], os.environ[c.password_env])
            smtp.send_message(self.message(alert))
