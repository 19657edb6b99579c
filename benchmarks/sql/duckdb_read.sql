-- The reference the ingest is measured against: DuckDB's own CSV reader, nothing else.
-- Paths come in as variables (set variable customers_csv = '…'), so this file stays plain SQL.
-- Every column is read (select *), as a user would; hence the AM04 exemptions.
create or replace table customers as
select * from read_csv(getvariable('customers_csv'));  -- noqa: AM04

create or replace table orders as
select * from read_csv(getvariable('orders_csv'));  -- noqa: AM04

create or replace table events as
select * from read_csv(getvariable('events_csv'));  -- noqa: AM04
