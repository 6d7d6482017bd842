"""``router import sam|serverless``: a SAM template or a serverless.yml turned into a router config.

``source`` reads the file with the line of every value, ``intrinsics`` resolves CloudFormation's
``Ref`` / ``Fn::Sub`` / ``Fn::GetAtt`` / ``Fn::Join``, ``variables`` serverless.yml's ``${...}``,
``convert`` builds router functions and routes in router terms, ``sam`` and ``serverless`` read each
format, and ``output`` writes the YAML with the list of what was not imported.
"""
