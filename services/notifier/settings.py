import base64
import ipaddress

from pydantic import Field, field_validator

from common.settings import Settings

SECRET_PREFIX = "whsec_"  # Standard Webhooks: the signing key, base64, behind this prefix


class NotifierSettings(Settings):
    notifier_group: str = Field("ocrstream-notifier", description="Consumer group (the faust app id)")
    webhook_secrets: dict[str, str] = Field(
        default={}, description='JSON object tenant → signing secret "whsec_<base64 key>"; a tenant without one '
                                'gets its deliveries failed with that reason, never sent unsigned')
    webhook_allowlist: list[str] = Field(
        default=[], description='JSON list of networks, e.g. ["10.0.0.0/8", "127.0.0.1/32"], that webhook URLs may '
                                'reach although they are private, loopback or link-local (refused otherwise)')
    webhook_milestone_percent: int = Field(
        0, ge=0, le=99, description="Also notify each time a batch passes a multiple of this percent; 0 = terminal only")
    webhook_timeout_s: float = Field(10.0, gt=0, description="One attempt's whole HTTP exchange")
    webhook_retry_first_s: float = Field(5.0, gt=0, description="Wait before the first retry; doubles each time")
    webhook_retry_max_interval_s: float = Field(3600.0, gt=0, description="The longest wait between two attempts")
    webhook_retry_window_s: float = Field(86400.0, gt=0, description="Give up this long after the delivery was owed")
    delivery_poll_s: float = Field(1.0, gt=0, description="How often due retries are looked for when nothing wakes "
                                                          "the sender")
    delivery_concurrency: int = Field(16, ge=1, description="Deliveries in flight at once per process")
    probe_host: str = "127.0.0.1"
    probe_port: int = 9110

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_decode(cls, secrets: dict[str, str]) -> dict[str, str]:
        for tenant, secret in secrets.items():
            if not secret.startswith(SECRET_PREFIX):
                raise ValueError(f"secret of tenant {tenant!r} must start with {SECRET_PREFIX!r}")
            base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        return secrets

    @field_validator("webhook_allowlist")
    @classmethod
    def _networks_parse(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)
        return networks

    @property
    def delivery_lease_s(self) -> float:
        """A claimed delivery is due again after this, so a sender that died mid-attempt is retried by another."""
        return 2 * self.webhook_timeout_s + 5
