#!/usr/bin/env python3
"""Checks the CloudFormation template against the rest of the repository.

- Every ARN goes through ${AWS::Partition}: no literal "arn:aws:" (nor "arn:aws-cn:").
- The seed's parameters keep their names; the two target keys are NoEcho.
- Every XPSYNC_* variable of the container is a configuration key that
  config/xpsync.example.toml documents (XPSYNC_<TABLE>__<KEY>).
- The task role's policy is deploy/iam/source-task-policy.json, statement for
  statement, once the template's references are written as that file's placeholders.

Usage: scripts/deploy_template_checks.py   (from anywhere; needs PyYAML)
Exit 1 with one line per problem.
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "xpsync.yaml"
TASK_POLICY = ROOT / "deploy" / "iam" / "source-task-policy.json"
EXAMPLE_CONFIG = ROOT / "config" / "xpsync.example.toml"

SEED_PARAMETERS = [
    "SourceRegion", "SourceBucketName", "TargetRegion", "TargetBucketName",
    "TargetAccessKeyId", "TargetSecretAccessKey", "SecretsManagerSecretName",
]
NO_ECHO = ["TargetAccessKeyId", "TargetSecretAccessKey"]

# How the template's references read in source-task-policy.json.
SUB_PLACEHOLDERS = {
    "${AWS::Partition}": "${Partition}",
    "${AWS::Region}": "${Region}",
    "${AWS::AccountId}": "${AccountId}",
    "${SourceBucketName}": "${SourceBucket}",
}
GETATT_PLACEHOLDERS = {
    "EventQueue.Arn": "arn:${Partition}:sqs:${Region}:${AccountId}:${QueueName}",
    "DeadLetterQueue.Arn": "arn:${Partition}:sqs:${Region}:${AccountId}:${DeadLetterQueueName}",
}
REF_PLACEHOLDERS = {"TargetCredentialsSecret": "${SecretArn}"}


class Tagged:
    """A CloudFormation short-form function (!Sub, !Ref, ...), kept as written."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"{self.tag} {self.value!r}"


class Loader(yaml.SafeLoader):
    pass


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tagged(suffix, value)


Loader.add_multi_constructor("!", _tagged)


def placeholder(value, problems, where):
    """A policy Resource of the template, written as source-task-policy.json writes it."""
    if isinstance(value, Tagged):
        if value.tag == "Sub" and isinstance(value.value, str):
            text = value.value
            for ref, name in SUB_PLACEHOLDERS.items():
                text = text.replace(ref, name)
            return text
        if value.tag == "GetAtt" and value.value in GETATT_PLACEHOLDERS:
            return GETATT_PLACEHOLDERS[value.value]
        if value.tag == "Ref" and value.value in REF_PLACEHOLDERS:
            return REF_PLACEHOLDERS[value.value]
    problems.append(f"{where}: no placeholder for the template's {value!r}; "
                    "teach scripts/deploy_template_checks.py about it")
    return repr(value)


def as_list(value):
    return value if isinstance(value, list) else [value]


def statements(document, resource_of):
    return {
        s.get("Sid", "?"): (
            s["Effect"],
            sorted(as_list(s["Action"])),
            sorted(resource_of(r) for r in as_list(s["Resource"])),
        )
        for s in document["Statement"]
    }


def config_keys():
    """Dotted paths of every key the example configuration documents."""
    keys, table = set(), ""
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        header = re.match(r"^\[([a-z_.]+)\]", line)
        if header:
            table = header.group(1)
            continue
        key = re.match(r"^([a-z_]+)\s*=", line)
        if key and table:
            keys.add(f"{table}.{key.group(1)}")
    return keys


def main():
    problems = []
    text = TEMPLATE.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(r"arn:aws(-cn|-us-gov)?:", line):
            problems.append(f"{TEMPLATE.name}:{n}: a literal partition in an ARN; "
                            "use arn:${AWS::Partition}:")
    template = yaml.load(text, Loader=Loader)

    parameters = template.get("Parameters", {})
    for name in SEED_PARAMETERS:
        if name not in parameters:
            problems.append(f"parameter {name} is missing (the seed's names are kept)")
    for name in NO_ECHO:
        if str(parameters.get(name, {}).get("NoEcho", "")).lower() != "true":
            problems.append(f"parameter {name} must be NoEcho")

    resources = template["Resources"]
    known = config_keys()
    container = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    for variable in container.get("Environment", []):
        name = variable["Name"]
        if not name.startswith("XPSYNC_"):
            continue
        path = ".".join(part.lower() for part in name[len("XPSYNC_"):].split("__"))
        if path not in known:
            problems.append(f"container variable {name}: {path} is not a key of "
                            f"{EXAMPLE_CONFIG.relative_to(ROOT)}")

    role = resources["TaskRole"]["Properties"]["Policies"]
    if len(role) != 1:
        problems.append(f"TaskRole has {len(role)} inline policies; expected one")
    template_statements = statements(
        role[0]["PolicyDocument"],
        lambda r: placeholder(r, problems, "TaskRole"),
    )
    file_statements = statements(json.loads(TASK_POLICY.read_text()), lambda r: r)
    for sid in sorted(set(template_statements) | set(file_statements)):
        mine, theirs = template_statements.get(sid), file_statements.get(sid)
        if mine != theirs:
            problems.append(f"statement {sid}: TaskRole has {mine}, "
                            f"{TASK_POLICY.relative_to(ROOT)} has {theirs}")
    for placeholder_name in re.findall(r"\$\{([^}]*)\}", TASK_POLICY.read_text()):
        if placeholder_name not in {"Partition", "SourceBucket", "Region", "AccountId",
                                    "QueueName", "DeadLetterQueueName", "SecretArn"}:
            problems.append(f"{TASK_POLICY.name}: undocumented placeholder ${{{placeholder_name}}}")

    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"template: ARNs through AWS::Partition; seed parameters kept; "
          f"{len(container.get('Environment', []))} container variables are configuration keys; "
          f"TaskRole matches {TASK_POLICY.relative_to(ROOT)} ({len(file_statements)} statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
