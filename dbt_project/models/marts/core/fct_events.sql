{{
    config(
        materialized='incremental',
        unique_key='event_key',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with

events as (
    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() %}
        where load_id not in (select distinct load_id from {{ this }})
    {% endif %}
)

select * from events
