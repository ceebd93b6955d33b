"""Customers: linking addresses, merging customers, profiles and the importer."""

from services.customers.facts import CustomerFacts, Profile
from services.customers.service import CustomerError, Customers

__all__ = ["CustomerError", "CustomerFacts", "Customers", "Profile"]
