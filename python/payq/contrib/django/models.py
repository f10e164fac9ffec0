"""payq's tables are not Django models: they live in ``PAYQ["SCHEMA"]`` and
payq migrates them itself (``manage.py payq_migrate``, or after
``manage.py migrate`` with ``AUTO_MIGRATE``). This module exists because
Django sends ``post_migrate`` only to apps that have one."""
