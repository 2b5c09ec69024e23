"""Intake (Select): receive a job — its manifest and data drop — snapshot the drop and fix the lot number."""
