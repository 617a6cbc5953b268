-- Orthanc routing rule: forward every projection radiograph (CR, DX, RG) to the fracsight node.
--
-- Load it with "LuaScripts": ["/etc/orthanc/route-to-fracsight.lua"] in Orthanc's configuration,
-- and declare the node under "DicomModalities" with the name used below, allowed to echo and
-- store only (listed as [AET, host, port], whoever calls in as its AE title could query and
-- retrieve the whole archive; docs/dicom.md, "The Orthanc routing recipe"), e.g.
--   "DicomModalities": { "fracsight": {
--     "AET": "FRACSIGHT", "Host": "fracsight.hospital.local", "Port": 11112,
--     "AllowEcho": true, "AllowStore": true, "AllowFind": false, "AllowFindWorklist": false,
--     "AllowMove": false, "AllowGet": false, "AllowStorageCommitment": false } }
-- The node must list Orthanc's AE title among its allowed callers (--allow ORTHANC).
-- fracsight sends its results (SR, PR, OT) back to Orthanc; they are never forwarded, because
-- only the modalities below are, and nothing that came from the node itself is.

local FRACSIGHT = "fracsight"            -- the DicomModalities entry of the node
local FRACSIGHT_AET = "FRACSIGHT"        -- the node's AE title: its own results are not routed
-- projection radiography, as the node reads it (docs/reading.md); not OT or SC, the kinds of the
-- node's own captures and of scanned documents
local ROUTED = { CR = true, DX = true, RG = true }

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin["RemoteAet"] == FRACSIGHT_AET then
    return
  end
  if ROUTED[tags["Modality"]] then
    -- an Orthanc job of its own: while the node is down (restarting, loading its model) the job
    -- fails and stays in Orthanc's /jobs, to resubmit there (POST /jobs/ID/resubmit) once the node
    -- is back. SendToModality() logged one line and dropped the image for good. What fracsight
    -- acknowledged is already safe in its spool.
    RestApiPost("/modalities/" .. FRACSIGHT .. "/store",
                DumpJson({ Resources = { instanceId }, Asynchronous = true }, true))
  end
end
