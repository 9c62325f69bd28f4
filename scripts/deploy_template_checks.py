#!/usr/bin/env python3
"""Checks the CloudFormation template against the rest of the repository.

What cfn-lint cannot know:

- Every ARN goes through ${AWS::Partition}: no literal "arn:aws:" (nor "arn:aws-cn:").
- The seed's parameters keep their names; the two target keys are NoEcho; every
  parameter is in exactly one ParameterGroup.
- The Lambda-based stack's parameter file (tests/migration/lambda-stack-parameters.json)
  fits: it holds exactly that stack's eight parameters, each one a parameter here whose
  constraints its value meets; once xpsync's own required parameters (image, VPC,
  subnets) are added, no other parameter lacks a default, and the Rules hold.
- Every XPSYNC_* variable of the workers' and the sweep's containers is a
  configuration key that config/xpsync.example.toml documents (XPSYNC_<TABLE>__<KEY>).
- The task role's policy is deploy/iam/source-task-policy.json and OperatorPolicy's is
  deploy/iam/operator-policy.json, statement for statement, once the template's
  references are written as those files' placeholders; the workers cannot receive
  from or delete in the dead-letter queue, and keep sending to the main queue.
- Memory: a MemoryLimit row for every task Memory, leaving at least 256 MiB and holding
  at least multipart_threshold (64 MiB); no MemoryLimit parameter; the Fargate
  Cpu/Memory rules name only allowed Memory values.
- Every resource the stack is expected to have exists; every CloudWatch alarm, and the
  failed-sweep rule, notifies the alarm topic (the created one, or AlarmTopicArn).
- The sweep: scheduled, running `backfill --mode enqueue --min-age <N>m --emf` of the
  same image, its drift alarm on xpsync/sweep DifferingKeys by Bucket, twice in a row,
  and its failure rule on its own task definition.
- ReplicateDeletes and ReplicateTags ("true"/"false"): for each of the four
  combinations, the conditions resolved as CloudFormation would, the source bucket's
  rule routes exactly Object Created, plus Object Deleted with deletes, plus Object
  Tags Added/Deleted with tags; and the workers' and the sweep's
  XPSYNC_REPLICATE__DELETES / XPSYNC_REPLICATE__TAGS are the parameters' values.
- Auto scaling tracks the backlog per task from visible messages only: every SQS
  metric of BacklogPerTaskScalingPolicy is the event queue's
  ApproximateNumberOfMessagesVisible (never ...NotVisible nor ...Delayed), and its
  metric math, evaluated on a queue of delayed messages only, stays below the target
  (delayed checks never hold the service scaled out), while visible messages beyond
  the target per task take it above (work scales the service out), also with no task
  running.

Usage: scripts/deploy_template_checks.py   (from anywhere; needs PyYAML)
Exit 1 with one line per problem.
"""

import ast
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "xpsync.yaml"
TASK_POLICY = ROOT / "deploy" / "iam" / "source-task-policy.json"
OPERATOR_POLICY = ROOT / "deploy" / "iam" / "operator-policy.json"
EXAMPLE_CONFIG = ROOT / "config" / "xpsync.example.toml"
LAMBDA_PARAMETERS = ROOT / "tests" / "migration" / "lambda-stack-parameters.json"

SEED_PARAMETERS = [
    "SourceRegion", "SourceBucketName", "TargetRegion", "TargetBucketName",
    "TargetAccessKeyId", "TargetSecretAccessKey", "SecretsManagerSecretName",
]
# The Lambda-based stack's parameters: the seed's and its /tmp size.
LAMBDA_STACK_PARAMETERS = SEED_PARAMETERS + ["TmpDirectorySize"]
NO_ECHO = ["TargetAccessKeyId", "TargetSecretAccessKey"]
# What only xpsync needs and nobody can default, with plausible values.
XPSYNC_REQUIRED = {
    "ImageUri": "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn/xpsync:0.1.0",
    "VpcId": "vpc-0123456789abcdef0",
    "Subnets": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
}

EXPECTED_RESOURCES = [
    "DeadLetterQueue", "EventQueue", "SourceBucketEventRule", "EventQueuePolicy",
    "DeadLetterQueuePolicy", "SourceBucketEventBridge", "TargetCredentialsSecret",
    "LogGroup", "Cluster", "ExecutionRole", "TaskRole", "TaskDefinition",
    "TaskSecurityGroup", "S3GatewayEndpoint", "Service", "ScalableTarget",
    "BacklogPerTaskScalingPolicy", "SweepTaskRole", "SweepTaskDefinition",
    "SweepSchedulerRole", "SweepScheduleGroup", "ConsistencySweepSchedule",
    "OperatorPolicy", "OperatorRole", "AlarmTopic", "AlarmTopicPolicy",
    "AlarmEmailSubscription", "OldestMessageAgeAlarm", "DeadLetterQueueAlarm",
    "RunningBelowDesiredAlarm", "SweepDriftAlarm", "SweepNotStartedAlarm", "SweepFailedRule",
]
SWEEP_RESOURCES = [
    "SweepTaskRole", "SweepTaskDefinition", "SweepSchedulerRole", "SweepScheduleGroup",
    "ConsistencySweepSchedule", "SweepDriftAlarm", "SweepNotStartedAlarm", "SweepFailedRule",
]

# The switches of [replicate] the stack exposes, with their defaults.
REPLICATE_SWITCHES = {"ReplicateDeletes": "false", "ReplicateTags": "true"}
# The only SQS metric the backlog per task may read.
VISIBLE = "ApproximateNumberOfMessagesVisible"

MIB = 1024 * 1024
MULTIPART_THRESHOLD = 64 * MIB
MIN_HEADROOM = 256 * MIB


class Tagged:
    """A CloudFormation short-form function (!Sub, !Ref, ...), kept as written."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __eq__(self, other):
        return isinstance(other, Tagged) and (self.tag, self.value) == (other.tag, other.value)

    def __repr__(self):
        return f"!{self.tag} {self.value!r}"


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

# The alarm topic, however it came to be.
ALARM_TOPIC = Tagged("If", ["CreatesAlarmTopic", Tagged("Ref", "AlarmTopic"), Tagged("Ref", "AlarmTopicArn")])
# The target keys' secret: the existing one (any version suffix), or the created one.
EXISTING_SECRET_ARN = Tagged(
    "Sub", "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ExistingSecretName}-??????")
SECRET_ARN = Tagged("If", ["UsesExistingSecret", EXISTING_SECRET_ARN, Tagged("Ref", "TargetCredentialsSecret")])
SECRET_ID = Tagged("If", ["UsesExistingSecret", Tagged("Ref", "ExistingSecretName"),
                          Tagged("Ref", "TargetCredentialsSecret")])

# How the template's references read in deploy/iam/*.json.
SUB_PLACEHOLDERS = {
    "${AWS::Partition}": "${Partition}",
    "${AWS::Region}": "${Region}",
    "${AWS::AccountId}": "${AccountId}",
    "${SourceBucketName}": "${SourceBucket}",
    "${Cluster}": "${ClusterName}",
}
GETATT_PLACEHOLDERS = {
    "EventQueue.Arn": "arn:${Partition}:sqs:${Region}:${AccountId}:${QueueName}",
    "DeadLetterQueue.Arn": "arn:${Partition}:sqs:${Region}:${AccountId}:${DeadLetterQueueName}",
}
DOCUMENTED_PLACEHOLDERS = {"Partition", "SourceBucket", "Region", "AccountId", "QueueName",
                           "DeadLetterQueueName", "SecretArn", "ClusterName"}


def placeholder(value, problems, where):
    """A policy Resource of the template, written as deploy/iam/*.json write it."""
    if value == SECRET_ARN:
        return "${SecretArn}"
    if isinstance(value, Tagged):
        if value.tag == "Sub" and isinstance(value.value, str):
            text = value.value
            for ref, name in SUB_PLACEHOLDERS.items():
                text = text.replace(ref, name)
            return text
        if value.tag == "GetAtt" and value.value in GETATT_PLACEHOLDERS:
            return GETATT_PLACEHOLDERS[value.value]
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


def compare_policy(problems, name, document, path):
    """The template's policy document against its standalone file, statement for statement."""
    mine = statements(document, lambda r: placeholder(r, problems, name))
    theirs = statements(json.loads(path.read_text()), lambda r: r)
    for sid in sorted(set(mine) | set(theirs)):
        if mine.get(sid) != theirs.get(sid):
            problems.append(f"statement {sid}: {name} has {mine.get(sid)}, "
                            f"{path.relative_to(ROOT)} has {theirs.get(sid)}")
    for used in re.findall(r"\$\{([^}]*)\}", path.read_text()):
        if used not in DOCUMENTED_PLACEHOLDERS:
            problems.append(f"{path.name}: undocumented placeholder ${{{used}}}")
    return mine


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


def check_container_variables(problems, resources):
    known = config_keys()
    count = 0
    for name in ("TaskDefinition", "SweepTaskDefinition"):
        container = resources[name]["Properties"]["ContainerDefinitions"][0]
        for variable in container.get("Environment", []):
            count += 1
            if not variable["Name"].startswith("XPSYNC_"):
                continue
            path = ".".join(p.lower() for p in variable["Name"][len("XPSYNC_"):].split("__"))
            if path not in known:
                problems.append(f"{name} variable {variable['Name']}: {path} is not a key of "
                                f"{EXAMPLE_CONFIG.relative_to(ROOT)}")
            if variable["Name"] == "XPSYNC_TARGET__CREDENTIALS__SECRET_ID" and variable["Value"] != SECRET_ID:
                problems.append(f"{name}: the secret id must be {SECRET_ID!r}")
            if variable["Name"] == "XPSYNC_TRANSFER__MEMORY_LIMIT" and variable["Value"] != Tagged(
                    "FindInMap", ["MemoryLimit", Tagged("Ref", "Memory"), "Limit"]):
                problems.append(f"{name}: transfer.memory_limit must come from the MemoryLimit mapping")
    return count


def check_parameters(problems, template):
    parameters = template["Parameters"]
    for name in LAMBDA_STACK_PARAMETERS:
        if name not in parameters:
            problems.append(f"parameter {name} is missing (the seed's and the Lambda stack's names are kept)")
    for name in NO_ECHO:
        if str(parameters.get(name, {}).get("NoEcho", "")).lower() != "true":
            problems.append(f"parameter {name} must be NoEcho")
    if "MemoryLimit" in parameters:
        problems.append("parameter MemoryLimit: it follows from Memory (the MemoryLimit mapping)")
    grouped = [p for g in template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
               for p in g["Parameters"]]
    for name in sorted(set(grouped) | set(parameters)):
        if grouped.count(name) != 1 or name not in parameters:
            problems.append(f"parameter {name}: in {grouped.count(name)} ParameterGroups, "
                            f"{'defined' if name in parameters else 'not defined'}")
    required = sorted(n for n, p in parameters.items() if "Default" not in p)
    expected = sorted(set(XPSYNC_REQUIRED) | {"SourceBucketName", "TargetBucketName"})
    if required != expected:
        problems.append(f"parameters without a default: {required}; expected {expected}")


class Unknown(Exception):
    """A rule function this script cannot evaluate without AWS (Fn::ValueOf...)."""


def evaluate(node, values, conditions=None):
    """A Rules or Conditions function; !Condition names one of `conditions`."""
    if isinstance(node, Tagged):
        f, v = node.tag, node.value
        if f == "Ref":
            return values[v]
        if f == "Condition" and conditions is not None:
            return evaluate(conditions[v], values, conditions)
        if f == "Equals":
            return evaluate(v[0], values, conditions) == evaluate(v[1], values, conditions)
        if f == "Not":
            return not evaluate(v[0], values, conditions)
        if f == "And":
            return all(evaluate(x, values, conditions) for x in v)
        if f == "Or":
            return any(evaluate(x, values, conditions) for x in v)
        if f == "Contains":
            return evaluate(v[1], values, conditions) in evaluate(v[0], values, conditions)
        raise Unknown(f)
    if isinstance(node, list):
        return [evaluate(x, values, conditions) for x in node]
    return node


def resolve(node, values, conditions):
    """A resource property with its !If resolved and its !Ref of parameters replaced by
    their values, as CloudFormation would with these parameter values; the rest as written."""
    if isinstance(node, Tagged):
        if node.tag == "If":
            name, when_true, when_false = node.value
            chosen = when_true if evaluate(conditions[name], values, conditions) else when_false
            return resolve(chosen, values, conditions)
        if node.tag == "Ref" and isinstance(node.value, str) and node.value in values:
            return values[node.value]
        return node
    if isinstance(node, list):
        return [resolve(x, values, conditions) for x in node]
    if isinstance(node, dict):
        return {k: resolve(x, values, conditions) for k, x in node.items()}
    return node


def default_values(template):
    """Every parameter at its default, with the required ones given plausible values."""
    values = {n: str(p.get("Default", "")) for n, p in template["Parameters"].items()}
    values.update(XPSYNC_REQUIRED)
    values.update(SourceBucketName="source-bucket", TargetBucketName="target-bucket")
    return values


def check_value(problems, name, spec, value):
    where = f"{LAMBDA_PARAMETERS.name}: {name}={value!r}"
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        problems.append(f"{where} does not match {spec['AllowedPattern']}")
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        problems.append(f"{where} is not one of {spec['AllowedValues']}")
    if not spec.get("MinLength", 0) <= len(value) <= spec.get("MaxLength", 4096):
        problems.append(f"{where}: length out of bounds")
    if spec["Type"] == "Number":
        number = float(value)
        if not spec.get("MinValue", number) <= number <= spec.get("MaxValue", number):
            problems.append(f"{where}: out of bounds")


def check_lambda_parameter_file(problems, template):
    parameters = template["Parameters"]
    given = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(LAMBDA_PARAMETERS.read_text())}
    if sorted(given) != sorted(LAMBDA_STACK_PARAMETERS):
        problems.append(f"{LAMBDA_PARAMETERS.name} has {sorted(given)}; "
                        f"the Lambda stack's parameters are {sorted(LAMBDA_STACK_PARAMETERS)}")
    for name, value in given.items():
        if name not in parameters:
            problems.append(f"{LAMBDA_PARAMETERS.name}: {name} is not a template parameter "
                            '(create-stack fails: "Parameters: [...] do not exist in the template")')
        else:
            check_value(problems, name, parameters[name], value)
    supplied = {**given, **XPSYNC_REQUIRED}
    missing = sorted(n for n, p in parameters.items() if "Default" not in p and n not in supplied)
    if missing:
        problems.append(f"{LAMBDA_PARAMETERS.name} with {', '.join(XPSYNC_REQUIRED)} added still lacks {missing}")

    values = {n: str(p.get("Default", "")) for n, p in parameters.items()}
    values.update(supplied)
    for name, spec in parameters.items():
        if spec["Type"].startswith("List<") or spec["Type"] == "CommaDelimitedList":
            values[name] = values[name].split(",") if values[name] else [""]
    values["AWS::Region"] = values["SourceRegion"]
    for rule_name, rule in template.get("Rules", {}).items():
        try:
            if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], values):
                continue
            for assertion in rule["Assertions"]:
                if not evaluate(assertion["Assert"], values):
                    problems.append(f"{LAMBDA_PARAMETERS.name}: rule {rule_name} fails: "
                                    f"{' '.join(assertion['AssertDescription'].split())}")
        except Unknown:
            pass  # Fn::ValueOf...: needs the account's VPCs


def check_memory(problems, template):
    memories = template["Parameters"]["Memory"]["AllowedValues"]
    table = template["Mappings"]["MemoryLimit"]
    for memory in memories:
        row = table.get(memory, {}).get("Limit", "")
        size = re.fullmatch(r"([0-9]+)MiB", row)
        if not size:
            problems.append(f"MemoryLimit[{memory}]: {row!r} is not a size in MiB")
            continue
        limit, total = int(size.group(1)) * MIB, int(memory) * MIB
        if total - limit < MIN_HEADROOM or limit < MULTIPART_THRESHOLD:
            problems.append(f"MemoryLimit[{memory}] = {row}: it must leave 256 MiB of the task "
                            "and hold multipart_threshold (64 MiB)")
    for extra in sorted(set(table) - set(memories)):
        problems.append(f"MemoryLimit[{extra}]: not an allowed Memory")
    cpus = template["Parameters"]["Cpu"]["AllowedValues"]
    for cpu in cpus:
        rule = template["Rules"].get(f"FargateCpu{cpu}")
        if not rule:
            problems.append(f"no rule FargateCpu{cpu} for the Fargate memory sizes of Cpu {cpu}")
            continue
        allowed = rule["Assertions"][0]["Assert"].value[0]
        for memory in set(allowed) - set(memories):
            problems.append(f"rule FargateCpu{cpu} allows Memory {memory}, which the parameter does not")


def check_roles(problems, resources):
    task = compare_policy(problems, "TaskRole",
                          resources["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"], TASK_POLICY)
    if len(resources["TaskRole"]["Properties"]["Policies"]) != 1:
        problems.append("TaskRole: expected one inline policy")
    for effect, actions, targets in task.values():
        if GETATT_PLACEHOLDERS["DeadLetterQueue.Arn"] in targets and (
                {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & set(actions)):
            problems.append("TaskRole: receiving from or deleting in the dead-letter queue is the operators'")
    if not any(GETATT_PLACEHOLDERS["EventQueue.Arn"] in t and "sqs:SendMessage" in a
               for _, a, t in task.values()):
        problems.append("TaskRole: the workers send range and check messages to the main queue")
    operator = compare_policy(problems, "OperatorPolicy",
                              resources["OperatorPolicy"]["Properties"]["PolicyDocument"], OPERATOR_POLICY)
    role = resources.get("OperatorRole", {}).get("Properties", {})
    if role.get("ManagedPolicyArns") != [Tagged("Ref", "OperatorPolicy")]:
        problems.append("OperatorRole must hold OperatorPolicy")
    return len(task), len(operator)


def check_alarms(problems, resources):
    alarms = [n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    for name in alarms:
        props = resources[name]["Properties"]
        for key in ("AlarmActions", "OKActions"):
            if props.get(key) != [ALARM_TOPIC]:
                problems.append(f"{name}.{key} must be [{ALARM_TOPIC!r}]")
    targets = resources["SweepFailedRule"]["Properties"]["Targets"]
    if [t["Arn"] for t in targets] != [ALARM_TOPIC]:
        problems.append("SweepFailedRule must notify the alarm topic")
    for name in ("AlarmTopic", "AlarmTopicPolicy"):
        if resources[name].get("Condition") != "CreatesAlarmTopic":
            problems.append(f"{name}: only without AlarmTopicArn (Condition CreatesAlarmTopic)")
    return len(alarms)


def check_secret(problems, resources):
    secret = resources["TargetCredentialsSecret"]
    if secret.get("Condition") != "CreatesSecret":
        problems.append("TargetCredentialsSecret: created only without ExistingSecretName")
    if secret["Properties"].get("Name") != Tagged("Sub", "${AWS::StackName}/${SecretsManagerSecretName}"):
        problems.append("TargetCredentialsSecret: named below the stack's name, never the Lambda stack's")


def check_sweep(problems, resources):
    for name in SWEEP_RESOURCES:
        if resources[name].get("Condition") != "SweepEnabled":
            problems.append(f"{name}: only with a SweepSchedule (Condition SweepEnabled)")
    definition = resources["SweepTaskDefinition"]["Properties"]
    container = definition["ContainerDefinitions"][0]
    expected = ["backfill", "--mode", "enqueue", "--min-age", Tagged("Sub", "${SweepMinAgeMinutes}m"), "--emf"]
    if container.get("Command") != expected:
        problems.append(f"SweepTaskDefinition command: {container.get('Command')}; expected {expected}")
    if container.get("Image") != Tagged("Ref", "ImageUri"):
        problems.append("SweepTaskDefinition: the workers' image")
    if definition.get("TaskRoleArn") != Tagged("GetAtt", "SweepTaskRole.Arn"):
        problems.append("SweepTaskDefinition: its own task role, SweepTaskRole")
    sweep_role = statements(resources["SweepTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"],
                            lambda r: placeholder(r, problems, "SweepTaskRole"))
    granted = {a for _, actions, _ in sweep_role.values() for a in actions}
    if granted != {"s3:ListBucket", "sqs:SendMessage", "secretsmanager:GetSecretValue"}:
        problems.append(f"SweepTaskRole: lists the source, sends to the queue, reads the secret; has {sorted(granted)}")
    target = resources["ConsistencySweepSchedule"]["Properties"]["Target"]
    if (target["Arn"] != Tagged("GetAtt", "Cluster.Arn")
            or target["EcsParameters"]["TaskDefinitionArn"] != Tagged("Ref", "SweepTaskDefinition")):
        problems.append("ConsistencySweepSchedule must run SweepTaskDefinition in Cluster")
    alarm = resources["SweepDriftAlarm"]["Properties"]
    shape = (alarm.get("Namespace"), alarm.get("MetricName"), alarm.get("Dimensions"),
             alarm.get("EvaluationPeriods"), alarm.get("DatapointsToAlarm"), alarm.get("Threshold"))
    if shape != ("xpsync/sweep", "DifferingKeys", [{"Name": "Bucket", "Value": Tagged("Ref", "SourceBucketName")}],
                 2, 2, 0):
        problems.append(f"SweepDriftAlarm: DifferingKeys > 0 in xpsync/sweep by Bucket, 2 of 2; has {shape}")
    detail = resources["SweepFailedRule"]["Properties"]["EventPattern"]["detail"]
    if detail.get("taskDefinitionArn") != [Tagged("Ref", "SweepTaskDefinition")]:
        problems.append("SweepFailedRule must match the sweep's task definition")


def check_replicate_switches(problems, template):
    """ReplicateDeletes x ReplicateTags: the detail types the rule routes, and the
    workers' (and the sweep's) replicate.deletes / replicate.tags."""
    parameters, resources = template["Parameters"], template["Resources"]
    before = len(problems)
    for name, default in REPLICATE_SWITCHES.items():
        spec = parameters.get(name, {})
        if [str(v) for v in spec.get("AllowedValues", [])] != ["true", "false"] or \
                str(spec.get("Default")) != default:
            problems.append(f'parameter {name}: AllowedValues ["true", "false"], Default "{default}"')
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    if not any({"ReplicateDeletes", "ReplicateTags"} <= set(g["Parameters"]) for g in groups):
        problems.append("parameters ReplicateDeletes and ReplicateTags: in the same ParameterGroup")
    if len(problems) > before:
        return 0
    conditions = template["Conditions"]
    pattern = resources["SourceBucketEventRule"]["Properties"]["EventPattern"]
    combinations = 0
    for deletes in ("true", "false"):
        for tags in ("true", "false"):
            combinations += 1
            values = {**default_values(template), "ReplicateDeletes": deletes, "ReplicateTags": tags}
            where = f"ReplicateDeletes={deletes} ReplicateTags={tags}"
            expected = ["Object Created"]
            expected += ["Object Deleted"] if deletes == "true" else []
            expected += ["Object Tags Added", "Object Tags Deleted"] if tags == "true" else []
            try:
                routed = resolve(pattern, values, conditions)
            except (Unknown, KeyError, TypeError, ValueError) as error:
                problems.append(f"{where}: cannot resolve SourceBucketEventRule's EventPattern ({error!r}); "
                                "teach scripts/deploy_template_checks.py about it")
                continue
            if routed.get("source") != ["aws.s3"]:
                problems.append(f"{where}: SourceBucketEventRule must match source aws.s3")
            types = routed.get("detail-type")
            if not isinstance(types, list) or sorted(types) != sorted(expected) or len(set(types)) != len(types):
                problems.append(f"{where}: SourceBucketEventRule routes {types!r}; expected {sorted(expected)}")
            for definition in ("TaskDefinition", "SweepTaskDefinition"):
                container = resources[definition]["Properties"]["ContainerDefinitions"][0]
                environment = {}
                for variable in container.get("Environment", []):
                    environment.setdefault(variable["Name"], []).append(variable["Value"])
                for variable, parameter in (("XPSYNC_REPLICATE__DELETES", "ReplicateDeletes"),
                                            ("XPSYNC_REPLICATE__TAGS", "ReplicateTags")):
                    given = [resolve(v, values, conditions) for v in environment.get(variable, [])]
                    if given != [values[parameter]]:
                        problems.append(f"{where}: {definition} sets {variable} to {given!r}; "
                                        f"expected once, {parameter}'s value {values[parameter]!r}")
    return combinations


class MetricMath:
    """The part of CloudWatch metric math the scaling policy may use: + - * /,
    comparisons, IF(condition, then, else); ids of other metrics of the query."""

    def __init__(self, query, value_of):
        self.query, self.value_of, self.seen = query, value_of, set()

    def metric(self, metric_id):
        if metric_id not in self.query:
            raise ValueError(f"no metric {metric_id!r} in the query")
        if metric_id in self.seen:
            raise ValueError(f"{metric_id!r} refers to itself")
        self.seen.add(metric_id)
        try:
            entry = self.query[metric_id]
            if "Expression" in entry:
                return self.expression(entry["Expression"])
            return self.value_of(entry["MetricStat"]["Metric"])
        finally:
            self.seen.discard(metric_id)

    def expression(self, text):
        return self.node(ast.parse(text, mode="eval").body)

    def node(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.metric(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.node(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left, right = self.node(node.left), self.node(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ZeroDivisionError("a division by zero (no data point)")
            return BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
            return float(COMPARE[type(node.ops[0])](self.node(node.left), self.node(node.comparators[0])))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "IF"
                and len(node.args) == 3):
            condition, when_true, when_false = node.args
            return self.node(when_true if self.node(condition) != 0 else when_false)
        raise ValueError(f"{ast.dump(node)} is beyond what this script evaluates")


BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
          ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
COMPARE = {ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b, ast.Lt: lambda a, b: a < b,
           ast.LtE: lambda a, b: a <= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def check_scaling(problems, template):
    """The backlog per task counts visible messages only: delayed checks do not hold
    the service scaled out; visible work scales it out."""
    before = len(problems)
    policy = template["Resources"]["BacklogPerTaskScalingPolicy"]["Properties"]
    tracking = policy.get("TargetTrackingScalingPolicyConfiguration", {})
    if (policy.get("PolicyType"), policy.get("ScalingTargetId"), tracking.get("TargetValue")) != (
            "TargetTrackingScaling", Tagged("Ref", "ScalableTarget"), Tagged("Ref", "BacklogPerTaskTarget")):
        problems.append("BacklogPerTaskScalingPolicy: target tracking of ScalableTarget at BacklogPerTaskTarget")
        return 0
    spec = tracking.get("CustomizedMetricSpecification", {})
    # A single metric (MetricName at the top) or metric math (Metrics).
    entries = spec.get("Metrics") or [{"Id": "single", "ReturnData": True, "MetricStat": {"Metric": spec}}]
    query = {e.get("Id"): e for e in entries}
    queue = [{"Name": "QueueName", "Value": Tagged("GetAtt", "EventQueue.QueueName")}]
    sqs = [e["MetricStat"]["Metric"] for e in entries
           if "MetricStat" in e and e["MetricStat"]["Metric"].get("Namespace") == "AWS/SQS"]
    for metric in sqs:
        if metric.get("MetricName") != VISIBLE or metric.get("Dimensions") != queue:
            problems.append(f"BacklogPerTaskScalingPolicy: {metric.get('MetricName')} of "
                            f"{metric.get('Dimensions')}; the backlog is the event queue's {VISIBLE} only "
                            "(delayed check messages must not hold the service scaled out)")
    if not sqs:
        problems.append(f"BacklogPerTaskScalingPolicy: no AWS/SQS {VISIBLE} of the event queue")
    returned = [i for i, e in query.items() if e.get("ReturnData", True)]
    if len(returned) != 1:
        problems.append(f"BacklogPerTaskScalingPolicy: {len(returned)} metrics return data; exactly one must")
    if len(problems) > before:
        return 0

    target = float(default_values(template)["BacklogPerTaskTarget"])
    most = float(default_values(template)["MaxTasks"])

    def backlog_per_task(visible, delayed, in_flight, running):
        queue_state = {VISIBLE: visible, "ApproximateNumberOfMessagesDelayed": delayed,
                       "ApproximateNumberOfMessagesNotVisible": in_flight}

        def value_of(metric):
            name, namespace = metric.get("MetricName"), metric.get("Namespace")
            if namespace == "AWS/SQS" and name in queue_state:
                return queue_state[name]
            if namespace == "ECS/ContainerInsights" and name == "RunningTaskCount":
                return running
            raise ValueError(f"{namespace} {name}: teach scripts/deploy_template_checks.py about it")

        return MetricMath(query, value_of).metric(returned[0])

    scenarios = [
        # (what, visible, delayed, in flight, running tasks, must scale out)
        ("only delayed check messages, the fleet at MaxTasks", 0, 100 * target * most, 0, most, False),
        ("only delayed check messages, one task", 0, 100 * target * most, 0, 1, False),
        ("only messages in flight, the fleet at MaxTasks", 0, 0, 100 * target * most, most, False),
        ("visible work beyond the target per task, MaxTasks running", 2 * target * most, 0, 0, most, True),
        ("visible work beyond the target, one task", 2 * target, 0, 0, 1, True),
        ("visible work beyond the target, no task running", 2 * target, 0, 0, 0, True),
        ("visible work beyond the target and delayed checks", 2 * target, 100 * target, 0, 1, True),
    ]
    for what, visible, delayed, in_flight, running, scales_out in scenarios:
        try:
            value = backlog_per_task(visible, delayed, in_flight, running)
        except (ValueError, ZeroDivisionError, SyntaxError, KeyError) as error:
            problems.append(f"BacklogPerTaskScalingPolicy with {what}: cannot evaluate its metric ({error})")
            break
        if (value > target) != scales_out:
            problems.append(f"BacklogPerTaskScalingPolicy with {what}: backlog per task {value:g} against "
                            f"the target {target:g}; it must {'' if scales_out else 'not '}scale out")
    return len(scenarios)


def main():
    problems = []
    text = TEMPLATE.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(r"arn:aws(-cn|-us-gov)?:", line):
            problems.append(f"{TEMPLATE.name}:{n}: a literal partition in an ARN; "
                            "use arn:${AWS::Partition}:")
    template = yaml.load(text, Loader=Loader)
    resources = template["Resources"]
    for name in EXPECTED_RESOURCES:
        if name not in resources:
            problems.append(f"resource {name} is missing")
    if problems:
        return report(problems)

    check_parameters(problems, template)
    check_lambda_parameter_file(problems, template)
    variables = check_container_variables(problems, resources)
    check_memory(problems, template)
    task_statements, operator_statements = check_roles(problems, resources)
    alarms = check_alarms(problems, resources)
    check_secret(problems, resources)
    check_sweep(problems, resources)
    combinations = check_replicate_switches(problems, template)
    scenarios = check_scaling(problems, template)
    if problems:
        return report(problems)
    print(f"template: ARNs through AWS::Partition; the seed's and the Lambda stack's parameters kept, "
          f"and {LAMBDA_PARAMETERS.relative_to(ROOT)} fits; {variables} container variables are "
          f"configuration keys; TaskRole matches {TASK_POLICY.relative_to(ROOT)} ({task_statements} "
          f"statements) and OperatorPolicy {OPERATOR_POLICY.relative_to(ROOT)} ({operator_statements}); "
          f"MemoryLimit covers every Memory; {alarms} alarms and the failed-sweep rule notify the topic; "
          f"the sweep is wired; the event rule and XPSYNC_REPLICATE__* follow ReplicateDeletes and "
          f"ReplicateTags in all {combinations} combinations; the backlog per task counts visible "
          f"messages only ({scenarios} queue states)")
    return 0


def report(problems):
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
