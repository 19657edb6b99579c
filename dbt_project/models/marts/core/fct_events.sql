{{ config(**incremental_by_key('event_key')) }}

with

events as (
    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() %}
        where load_id not in (select distinct load_id from {{ this }})
    {% endif %}
)

select * from events
