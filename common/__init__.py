"""Code shared by every Synq function: models, pure domain logic, services and storage adapters."""
