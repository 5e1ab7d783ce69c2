"""Simulated charging piles: real Modbus TCP/RTU servers with charging physics and fault injection."""
