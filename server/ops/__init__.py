"""Operations endpoints: ``/v1/config``, ``/healthz``, ``/readyz``, ``/metrics``."""
