-- Argo CD health of a lapse.dev AccessGrant. The mapping per phase is the table in
-- docs/gitops.md; health_test.yaml runs it on one object per phase.
local hs = {}

local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for lapse-operator"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for lapse-operator to act on generation " .. generation
  return hs
end

-- A status someone else wrote ended the lease: that is an incident, not a normal end.
local tampered = condition("Tampered")
if tampered ~= nil and tampered.status == "True" then
  hs.status = "Degraded"
  hs.message = tampered.message
  return hs
end

-- kstatus: Stalled means only a change can help (denied, failed, a revocation overdue).
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local phase = obj.status.phase
local message = obj.status.message or phase
if phase == "Active" or phase == "Expired" or phase == "Revoked" then
  -- Active: the access is usable. Expired and Revoked: the lease ended as its spec said.
  hs.status = "Healthy"
elseif phase == "Scheduled" or phase == "PendingApproval" then
  -- Waiting by design: for window.notBefore, or for approvers.
  hs.status = "Suspended"
elseif phase == "Denied" or phase == "Failed" then
  hs.status = "Degraded"
else
  -- Pending, Activating, Revoking.
  hs.status = "Progressing"
end
hs.message = message
return hs
