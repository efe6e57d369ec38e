"""Vouchers (PDF and their verification), reports and their exports, roll-ups. No grpc."""
