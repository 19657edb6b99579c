{#- Generic tests the project needs beyond dbt's four (no package downloads at run time). -#}

{% test unique_combination(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as n_rows
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}

{#- Every value is within [min_value, max_value] (either bound optional). -#}
{% test between(model, column_name, min_value=none, max_value=none) %}
    select {{ column_name }}
    from {{ model }}
    where
        {%- if min_value is not none %} {{ column_name }} < {{ min_value }} {%- endif %}
        {%- if min_value is not none and max_value is not none %} or {%- endif %}
        {%- if max_value is not none %} {{ column_name }} > {{ max_value }} {%- endif %}
{% endtest %}

{#- accepted_values for text that may contain quotes (e.g. "Can't lose"). -#}
{% test one_of(model, column_name, values) %}
    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} not in (
        {%- for value in values %}
        '{{ value | replace("'", "''") }}'{{ "," if not loop.last }}
        {%- endfor %}
    )
{% endtest %}
