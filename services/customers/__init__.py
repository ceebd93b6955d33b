"""Customers: linking addresses, merging customers, profiles and the importer."""

from services.customers.service import CustomerError, CustomerFacts, Customers, Profile

__all__ = ["CustomerError", "CustomerFacts", "Customers", "Profile"]
