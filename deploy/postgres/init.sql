-- Run once by the postgres image when the data volume is new: sendvault's user and database.
-- The user has no password: it logs in with its client certificate (pg_hba.conf `cert`).
CREATE ROLE sendvault LOGIN;
CREATE DATABASE sendvault OWNER sendvault;
