{#- Incremental on the order key: a daily run copies only the rows the latest loads wrote (new or
    changed), found by their load id. Every as-of filter is applied downstream, so one fact
    table serves any run date. -#}
{{ config(**incremental_by_key('order_id')) }}

with

orders as (
    select * from {{ ref('stg_raw__orders') }}
    {% if is_incremental() %}
        where load_id not in (select distinct load_id from {{ this }})
    {% endif %}
)

select * from orders
