"""crack-deploy: the technician's side. Verifies a bundle locally, copies it over SSH and asks each device's
own `crackd models` commands to stage, activate, report status and roll back (see deploy.push)."""
